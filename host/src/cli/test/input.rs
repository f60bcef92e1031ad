//! Reading the events file: JSON lines in the format `beehive tail --json` and
//! `beehive record` print ([`event_from_json`]).
//!
//! Most lines are read by [`fast_line`], straight from the text into the event (the body
//! into MessagePack) without a `serde_json::Value` in between; anything it does not handle
//! (tags, repeated keys, meta as pairs, deep nesting, any error) is read again by
//! [`parse_line`], which has the final word on what a line means and on every error.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::super::Failure;
use crate::event::json::{MAX_DEPTH, event_from_json};
use crate::event::{EntryId, Event};

/// Events of the events file, in order, with the lines they came from.
#[derive(Default)]
pub(super) struct Block {
    /// The events as a consumer would receive them.
    pub(super) events: Vec<Event>,
    /// The line of each in the events file, from 1.
    pub(super) lines: Vec<usize>,
}

/// Events sent at a time by [`stream_events`].
const BLOCK: usize = 256;

/// Reads `path`: one event per line as [`event_from_json`] reads it (`stream` required;
/// `id`, `body` — lossless JSON, absent for none —, `meta` and `deliveries` optional);
/// blank lines are skipped. Sends the events in blocks of up to [`BLOCK`], in order, so
/// that earlier ones run while later ones are read. A line that is not such an event is
/// bad usage, named `file:line`, sent as the last item (as is an unreadable file). Stops
/// early when the receiver is gone.
pub(super) fn stream_events(path: &Path, to: &SyncSender<Result<Block, Failure>>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let _ = to.send(Err(Failure::Usage(format!(
                "cannot read the events file {}: {e}",
                path.display()
            ))));
            return;
        }
    };
    let mut streams = Streams::default();
    let mut block = Block::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let event = match fast_line(line, &mut streams) {
            Some(event) => event,
            None => match parse_line(line) {
                Ok(event) => event,
                Err(why) => {
                    let _ = to.send(Err(Failure::Usage(format!(
                        "{}:{number}: {why}",
                        path.display()
                    ))));
                    return;
                }
            },
        };
        block.events.push(event);
        block.lines.push(number);
        if block.events.len() == BLOCK && to.send(Ok(std::mem::take(&mut block))).is_err() {
            return;
        }
    }
    if !block.events.is_empty() {
        let _ = to.send(Ok(block));
    }
}

fn parse_line(line: &str) -> Result<Event, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON value: {e}"))?;
    event_from_json(&value).map_err(|e| e.to_string())
}

/// The stream name of the last event, shared by the events that follow on it.
#[derive(Default)]
struct Streams(Option<Arc<str>>);

impl Streams {
    fn get(&mut self, name: &str) -> Arc<str> {
        match &self.0 {
            Some(last) if **last == *name => last.clone(),
            _ => self.0.insert(Arc::from(name)).clone(),
        }
    }
}

/// The event of `line` when it is plain (see the module docs); `None` leaves the line to
/// [`parse_line`]. What it returns is what [`parse_line`] returns for the line.
fn fast_line(line: &str, streams: &mut Streams) -> Option<Event> {
    let mut de = serde_json::Deserializer::from_str(line);
    let fields = de.deserialize_map(LineVisitor(line.len())).ok()?;
    de.end().ok()?;
    Some(Event {
        id: fields.id.unwrap_or(EntryId::ZERO),
        stream: streams.get(fields.stream?),
        body: fields.body,
        meta: fields.meta,
        deliveries: fields.deliveries.unwrap_or(1),
    })
}

/// Any error of the fast reader: the line goes to [`parse_line`].
fn fallback<E: de::Error>() -> E {
    E::custom("left to the JSON value reader")
}

#[derive(Default)]
struct LineFields<'de> {
    id: Option<EntryId>,
    stream: Option<&'de str>,
    body: Option<Vec<u8>>,
    meta: Vec<(String, String)>,
    meta_seen: bool,
    deliveries: Option<u32>,
}

/// Reads an event line; holds the line's length (room for the body: plain JSON is rarely
/// shorter than its MessagePack).
struct LineVisitor(usize);

impl<'de> Visitor<'de> for LineVisitor {
    type Value = LineFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = LineFields::default();
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "id" if fields.id.is_none() => {
                    let text: &str = map.next_value()?;
                    fields.id = Some(text.parse().map_err(|_| fallback::<A::Error>())?);
                }
                "stream" if fields.stream.is_none() => {
                    let name: &str = map.next_value()?;
                    if name.is_empty() {
                        return Err(fallback());
                    }
                    fields.stream = Some(name);
                }
                "body" if fields.body.is_none() => {
                    let mut body = Vec::with_capacity(self.0);
                    map.next_value_seed(Msgpack {
                        out: &mut body,
                        depth: 1,
                    })?;
                    fields.body = Some(body);
                }
                "meta" if !fields.meta_seen => {
                    fields.meta_seen = true;
                    fields.meta = map.next_value_seed(Meta)?;
                }
                "deliveries" if fields.deliveries.is_none() => {
                    let n: u64 = map.next_value()?;
                    fields.deliveries = Some(
                        u32::try_from(n)
                            .ok()
                            .filter(|n| *n >= 1)
                            .ok_or_else(fallback::<A::Error>)?,
                    );
                }
                // An unknown or repeated key.
                _ => return Err(fallback()),
            }
        }
        Ok(fields)
    }
}

/// `meta` as an object of distinct keys with string values, or `null`.
struct Meta;

impl<'de> DeserializeSeed<'de> for Meta {
    type Value = Vec<(String, String)>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Meta {
    type Value = Vec<(String, String)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut meta: Vec<(String, String)> = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, String>()? {
            if meta.iter().any(|(k, _)| *k == key) {
                return Err(fallback());
            }
            meta.push((key, value));
        }
        Ok(meta)
    }
}

/// Writes one JSON value as the canonical MessagePack `json::from_json` writes for it,
/// when it is plain JSON: no key starting with `$` (a tag, or a map that reads as one),
/// no repeated key, not nested deeper than [`MAX_DEPTH`] allows.
struct Msgpack<'o> {
    out: &'o mut Vec<u8>,
    /// The depth of this value, 1 for the body.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Msgpack<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

/// Writing into a `Vec` cannot fail.
fn put<T, E>(result: Result<T, E>) {
    let _ = result;
}

impl Msgpack<'_> {
    /// Fills in the header of a list or map of `n` items whose one-byte placeholder is at
    /// `at` (fix headers fit it; longer ones are made room for).
    fn header(&mut self, at: usize, n: usize, map: bool) -> Option<()> {
        let n = u32::try_from(n).ok()?;
        let (fix, two, four) = if map {
            (0x80, 0xde, 0xdf)
        } else {
            (0x90, 0xdc, 0xdd)
        };
        if n < 16 {
            self.out[at] = fix | n as u8;
        } else if let Ok(short) = u16::try_from(n) {
            self.out[at] = two;
            self.out.splice(at + 1..at + 1, short.to_be_bytes());
        } else {
            self.out[at] = four;
            self.out.splice(at + 1..at + 1, n.to_be_bytes());
        }
        Some(())
    }

    fn nested(&mut self) -> Option<Msgpack<'_>> {
        // Containers deeper than `MAX_DEPTH` are an error of `from_json`: leave them to it.
        (self.depth < MAX_DEPTH).then(|| Msgpack {
            out: &mut *self.out,
            depth: self.depth + 1,
        })
    }
}

impl<'de> Visitor<'de> for Msgpack<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        put(rmp::encode::write_nil(self.out));
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        put(rmp::encode::write_bool(self.out, b));
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        put(rmp::encode::write_uint(self.out, n));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        match u64::try_from(n) {
            Ok(n) => put(rmp::encode::write_uint(self.out, n)),
            Err(_) => put(rmp::encode::write_sint(self.out, n)),
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        put(rmp::encode::write_f64(self.out, f));
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        let n = u32::try_from(s.len()).map_err(|_| fallback::<E>())?;
        put(rmp::encode::write_str_len(self.out, n));
        self.out.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        self.out.push(0);
        let mut n = 0;
        loop {
            let item = self.nested().ok_or_else(fallback::<A::Error>)?;
            if seq.next_element_seed(item)?.is_none() {
                break;
            }
            n += 1;
        }
        self.header(start, n, false).ok_or_else(fallback)
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.out.len();
        self.out.push(0);
        // Where each key's bytes are in `out`, to find a repeated one: the first ones on
        // the stack, any others in `more`.
        let mut first = [(0, 0); FIRST_KEYS];
        let mut more: Vec<(usize, usize)> = Vec::new();
        let mut n = 0;
        while let Some(key) = map.next_key_seed(Key {
            out: &mut *self.out,
            keys: [&first[..n.min(FIRST_KEYS)], &more],
        })? {
            match first.get_mut(n) {
                Some(slot) => *slot = key,
                None => more.push(key),
            }
            n += 1;
            let value = self.nested().ok_or_else(fallback::<A::Error>)?;
            map.next_value_seed(value)?;
        }
        self.header(start, n, true).ok_or_else(fallback)
    }
}

/// Writes a map key as a MessagePack string and returns where its bytes are; an error for
/// a key starting with `$` or one of `keys` (the map's earlier keys).
struct Key<'o> {
    out: &'o mut Vec<u8>,
    keys: [&'o [(usize, usize)]; 2],
}

/// Keys of a map checked for repeats without allocating.
const FIRST_KEYS: usize = 16;

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = (usize, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = (usize, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let repeated = self
            .keys
            .iter()
            .flat_map(|keys| keys.iter())
            .any(|&(from, len)| self.out[from..from + len] == *key.as_bytes());
        if key.starts_with('$') || repeated {
            return Err(fallback());
        }
        let n = u32::try_from(key.len()).map_err(|_| fallback::<E>())?;
        put(rmp::encode::write_str_len(self.out, n));
        let at = self.out.len();
        self.out.extend_from_slice(key.as_bytes());
        Ok((at, key.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_json_line_is_an_event() {
        let event = parse_line(
            r#"{"id":"1700000000000-3","stream":"colors","body":{"color":"red"},"meta":{"version":"1"},"deliveries":2}"#,
        )
        .unwrap();
        assert_eq!(event.id(), "1700000000000-3");
        assert_eq!(event.stream(), "colors");
        assert_eq!(event.tag("version"), "1");
        assert_eq!(event.deliveries(), 2);
        assert_eq!(
            event.body_json().unwrap().unwrap(),
            serde_json::json!({"color": "red"})
        );
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, why) in [
            ("{", "not a JSON value"),
            (r#"{"id":"1-0"}"#, "stream"),
            (r#"{"stream":"s","meta":{"k":1}}"#, "meta.k"),
        ] {
            let error = parse_line(line).err().unwrap();
            assert!(error.contains(why), "{line}: {error}");
        }
    }

    /// Lines the fast reader reads (`true`) or leaves (`false`); either way the event is
    /// the one `parse_line` reads.
    #[test]
    fn the_fast_reader_reads_as_the_value_reader() {
        let long_list = format!(
            r#"{{"stream":"s","body":[{}]}}"#,
            (0..300)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        let deep = |n: usize| {
            format!(
                r#"{{"stream":"s","body":{}1{}}}"#,
                "[".repeat(n),
                "]".repeat(n)
            )
        };
        let (deep_ok, deep_too) = (deep(MAX_DEPTH - 1), deep(MAX_DEPTH + 1));
        let keys = |n: usize, last: usize| {
            let mut pairs: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{i}"#)).collect();
            pairs.push(format!(r#""k{last}":"last""#));
            format!(r#"{{"stream":"s","body":{{{}}}}}"#, pairs.join(","))
        };
        let (many_keys, many_keys_repeated) = (keys(40, 40), keys(40, 20));
        let cases: Vec<(&str, bool)> = vec![
            (
                r#"{"id":"1700000000000-3","stream":"colors","body":{"name":"red","price_cents":1234},"meta":{"version":"2","b":""}}"#,
                true,
            ),
            (
                r#" {"stream":"s","deliveries":3,"id":"5","body":null,"meta":null} "#,
                true,
            ),
            (r#"{"stream":"s"}"#, true),
            (
                r#"{"stream":"s","body":[0,1,-1,-32,-33,127,128,255,256,65535,65536,4294967295,4294967296,18446744073709551615,-128,-129,-32768,-32769,-2147483648,-2147483649,-9223372036854775808]}"#,
                true,
            ),
            (
                r#"{"stream":"s","body":[-0,1.0,-0.0,0.1,1e300,-2.5e-300,18446744073709551616,-9223372036854775809,1E2]}"#,
                true,
            ),
            (
                r#"{"stream":"s","body":{"a\"b":"\u00e9\n","":[],"o":{},"t":true,"f":false,"x":{"$y":1,"z":2}}}"#,
                false,
            ),
            (
                r#"{"stream":"s","body":{"k":"\ud83d\ude00","big":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}}"#,
                true,
            ),
            (&long_list, true),
            (&deep_ok, true),
            (&many_keys, true),
            (&many_keys_repeated, false),
            (&deep_too, false),
            (r#"{"stream":"s","body":{"$bin":"AAH+/w=="}}"#, false),
            (r#"{"stream":"s","body":{"$raw":"wQ=="}}"#, false),
            (r#"{"stream":"s","body":{"a":1,"a":2}}"#, false),
            (r#"{"stream":"s","meta":{"a":"1","a":"2"}}"#, false),
            (r#"{"stream":"s","meta":[["a","1"],["a","2"]]}"#, false),
            (r#"{"stream":"s","stream":"t"}"#, false),
            (r#"{"stream":"s","id":"1-2-3"}"#, false),
            (r#"{"stream":"s","deliveries":1.0}"#, false),
            (r#"{"stream":"s","deliveries":0}"#, false),
            (r#"{"stream":"s"} x"#, false),
            (r#"{"stream":"s","other":1}"#, false),
            (r#"{"stream":""}"#, false),
            (r#"{"id":"1-0"}"#, false),
            (r#"[1]"#, false),
            (r#"{"stream":"s\u0041"}"#, false),
        ];
        for (line, fast) in cases {
            let mut streams = Streams::default();
            let read = fast_line(line, &mut streams);
            assert_eq!(read.is_some(), fast, "{line}");
            if let Some(event) = read {
                assert_eq!(Ok(event), parse_line(line), "{line}");
            }
        }
    }
}
