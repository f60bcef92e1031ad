//! The expectation line of a result, written straight from what the handler returned.
//!
//! [`write_record`] writes exactly `serde_json::to_string(&record)` of the [`Record`] the
//! result would make, without building it: no `serde_json::Value` per published body (an
//! ordered map per object, its keys hashed) and no map per publish's metadata. Comparing
//! that text with the expectation's line decides most events without reading the
//! expectation at all; the records are built only for mismatches (see `compare` in the
//! parent module).
//!
//! [`Record`]: super::record::Record

use std::io::Write as _;

use crate::event::{NewEvent, json};

/// Appends `text` as a JSON string, escaped as serde_json escapes it.
pub(super) fn push_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing to a Vec cannot fail");
}

/// Appends a record's expectation line (without the newline): what
/// `serde_json::to_string(&Record { id, outcome, publishes, logs, refused, batch })` writes,
/// the publishes as `beehive test` records them (body in lossless JSON, meta as a sorted
/// map in which a repeated key keeps its last value).
pub(super) fn write_record(
    out: &mut Vec<u8>,
    id: &str,
    outcome: &str,
    publishes: &[NewEvent],
    logs: &[String],
    refused: &[String],
    batch: Option<usize>,
) {
    out.extend_from_slice(b"{\"id\":");
    push_str(out, id);
    out.extend_from_slice(b",\"outcome\":");
    push_str(out, outcome);
    if !publishes.is_empty() {
        out.extend_from_slice(b",\"publishes\":[");
        for (i, publish) in publishes.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_published(out, publish);
        }
        out.push(b']');
    }
    for (name, list) in [("logs", logs), ("refused", refused)] {
        if list.is_empty() {
            continue;
        }
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":[");
        for (i, text) in list.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_str(out, text);
        }
        out.push(b']');
    }
    if let Some(n) = batch {
        let _ = write!(out, ",\"batch\":{n}");
    }
    out.push(b'}');
}

fn write_published(out: &mut Vec<u8>, publish: &NewEvent) {
    out.extend_from_slice(b"{\"stream\":");
    push_str(out, &publish.stream);
    if let Some(body) = &publish.body {
        out.extend_from_slice(b",\"body\":");
        write_body(out, body);
    }
    if !publish.meta.is_empty() {
        // As a BTreeMap collected from the pairs: sorted by key, the last value of a key.
        let mut meta: Vec<(&str, &str)> = publish
            .meta
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        meta.sort_by(|a, b| a.0.cmp(b.0));
        out.extend_from_slice(b",\"meta\":{");
        let mut first = true;
        for (i, (key, value)) in meta.iter().enumerate() {
            if meta.get(i + 1).is_some_and(|(next, _)| next == key) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            push_str(out, key);
            out.push(b':');
            push_str(out, value);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// Appends `serde_json::to_string(&json::body_to_json(body))`: written straight from the
/// MessagePack when the body is plain JSON (nil, booleans, integers, finite float 64s,
/// UTF-8 strings, lists, maps with distinct string keys, not too deep), else through
/// [`json::body_to_json`].
pub(super) fn write_body(out: &mut Vec<u8>, body: &[u8]) {
    let start = out.len();
    let mut plain = Plain { bytes: body, at: 0 };
    if plain.value(out, 1).is_some() && plain.at == body.len() {
        return;
    }
    out.truncate(start);
    serde_json::to_writer(&mut *out, &json::body_to_json(body))
        .expect("writing to a Vec cannot fail");
}

/// Containers nested deeper than this go through [`json::body_to_json`] (which has the
/// final word on [`json::MAX_DEPTH`]).
const PLAIN_DEPTH: usize = 100;

/// Maps with more keys than this go through [`json::body_to_json`] (the fast path checks
/// that keys are distinct pair by pair).
const PLAIN_KEYS: usize = 32;

/// A MessagePack reader writing JSON text; `None` for anything it leaves to
/// [`json::body_to_json`] (which tags it, or finds it is not MessagePack).
struct Plain<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Plain<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())?;
        let part = &self.bytes[self.at..end];
        self.at = end;
        Some(part)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn len(&mut self, width: usize) -> Option<usize> {
        Some(match width {
            1 => usize::from(self.array::<1>()?[0]),
            2 => usize::from(u16::from_be_bytes(self.array()?)),
            _ => u32::from_be_bytes(self.array()?) as usize,
        })
    }

    /// A UTF-8 string of `n` bytes.
    fn text(&mut self, n: usize) -> Option<&'a str> {
        std::str::from_utf8(self.take(n)?).ok()
    }

    /// A string's text when the next value is a string.
    fn key(&mut self) -> Option<&'a str> {
        let marker = self.array::<1>()?[0];
        let n = match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9..=0xdb => self.len(1 << (marker - 0xd9))?,
            _ => return None,
        };
        self.text(n)
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Option<()> {
        let marker = self.array::<1>()?[0];
        let _ = match marker {
            0x00..=0x7f => write!(out, "{marker}"),
            0xe0..=0xff => write!(out, "{}", marker as i8),
            0xc0 => out.write_all(b"null"),
            0xc2 => out.write_all(b"false"),
            0xc3 => out.write_all(b"true"),
            0xcc => write!(out, "{}", self.array::<1>()?[0]),
            0xcd => write!(out, "{}", u16::from_be_bytes(self.array()?)),
            0xce => write!(out, "{}", u32::from_be_bytes(self.array()?)),
            0xcf => write!(out, "{}", u64::from_be_bytes(self.array()?)),
            0xd0 => write!(out, "{}", self.array::<1>()?[0] as i8),
            0xd1 => write!(out, "{}", i16::from_be_bytes(self.array()?)),
            0xd2 => write!(out, "{}", i32::from_be_bytes(self.array()?)),
            0xd3 => write!(out, "{}", i64::from_be_bytes(self.array()?)),
            0xcb => {
                let f = f64::from_be_bytes(self.array()?);
                if !f.is_finite() {
                    return None;
                }
                serde_json::to_writer(&mut *out, &f).ok()?;
                Ok(())
            }
            0xa0..=0xbf => {
                let text = self.text(usize::from(marker & 0x1f))?;
                push_str(out, text);
                Ok(())
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (marker - 0xd9))?;
                let text = self.text(n)?;
                push_str(out, text);
                Ok(())
            }
            0x90..=0x9f => return self.list(out, usize::from(marker & 0x0f), depth),
            0xdc | 0xdd => {
                let n = self.len(if marker == 0xdc { 2 } else { 4 })?;
                return self.list(out, n, depth);
            }
            0x80..=0x8f => return self.map(out, usize::from(marker & 0x0f), depth),
            0xde | 0xdf => {
                let n = self.len(if marker == 0xde { 2 } else { 4 })?;
                return self.map(out, n, depth);
            }
            // Float 32, bin, ext, the reserved byte: tagged (or not MessagePack).
            _ => return None,
        };
        Some(())
    }

    fn list(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Option<()> {
        if depth > PLAIN_DEPTH || n > self.bytes.len() - self.at {
            return None;
        }
        out.push(b'[');
        for i in 0..n {
            if i > 0 {
                out.push(b',');
            }
            self.value(out, depth + 1)?;
        }
        out.push(b']');
        Some(())
    }

    fn map(&mut self, out: &mut Vec<u8>, n: usize, depth: usize) -> Option<()> {
        if depth > PLAIN_DEPTH || n > PLAIN_KEYS {
            return None;
        }
        let mut keys: [&str; PLAIN_KEYS] = [""; PLAIN_KEYS];
        out.push(b'{');
        for i in 0..n {
            let key = self.key()?;
            // A repeated key, or a lone key starting with `$`: written as `$map`.
            if keys[..i].contains(&key) || (n == 1 && key.starts_with('$')) {
                return None;
            }
            keys[i] = key;
            if i > 0 {
                out.push(b',');
            }
            push_str(out, key);
            out.push(b':');
            self.value(out, depth + 1)?;
        }
        out.push(b'}');
        Some(())
    }
}

/// The `id` of an expectation line as `beehive test --update` writes it (`{"id":"...",`),
/// when it has no escapes; `None` for any other line (it is then read as JSON).
pub(super) fn line_id(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("{\"id\":\"")?;
    let end = rest.find('"')?;
    let id = &rest[..end];
    (!id.contains('\\')).then_some(id)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::super::record::{Published, Record};
    use super::*;

    /// The record the result makes, built as a value.
    fn published(event: &NewEvent) -> Published {
        Published {
            stream: event.stream.clone(),
            body: event.body.as_deref().map(json::body_to_json),
            meta: event.meta.iter().cloned().collect::<BTreeMap<_, _>>(),
        }
    }

    fn bodies() -> Vec<Vec<u8>> {
        let mut bodies: Vec<Vec<u8>> = [
            json!({"name": "red", "price_cents": 1234}),
            json!(null),
            json!([true, false, 0, 1, -1, -32, -33, 127, 128, 255, 256, 65535, 65536, 4294967295u64, 4294967296u64, 18446744073709551615u64, -128, -129, -32768, -32769, -2147483648i64, -2147483649i64, i64::MIN]),
            json!([1.0, -0.0, 0.1, 1e300, -2.5e-300, 123456789.125]),
            json!({"a\"b": "\u{e9}\n\u{1}", "": [], "o": {}, "x": {"$y": 1, "z": 2}, "\u{1F600}": "x"}),
            json!({"$bin": "AAH+/w=="}),
            json!({"$f32": 0.1}),
            json!({"$f64": "NaN"}),
            json!({"$time": "2024-05-01T12:00:00.5Z"}),
            json!({"$map": [["$only", 1]]}),
            json!({"$map": [[1, "one"], [2, "two"]]}),
            json!({"$map": [["a", 1], ["a", 2]]}),
            json!({"$str": "/w=="}),
            json!({"$ext": [5, "AQI="]}),
            json!({"k": "a".repeat(40), "l": "b".repeat(300), "m": "c".repeat(70000)}),
            json!((0..20).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()),
            json!((0..40).map(|i| (format!("k{i}"), json!(i))).collect::<serde_json::Map<_, _>>()),
            json!((0..70000).collect::<Vec<_>>()),
        ]
        .iter()
        .map(|value| json::from_json(value).unwrap())
        .collect();
        let deep = |n: usize| {
            let mut body = vec![0x91; n];
            body.push(0x01);
            body
        };
        bodies.extend([
            deep(99),
            deep(100),
            deep(101),
            deep(json::MAX_DEPTH),
            deep(json::MAX_DEPTH + 1),
            vec![],
            vec![0xc1],
            vec![0x01, 0x02],
            vec![0x92, 0x01],
            vec![0xdd, 0xff, 0xff, 0xff, 0xff],
            vec![0xa2, 0xff, 0xfe],
            vec![0x81, 0x01, 0x02],
            vec![0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
            vec![0xd3, 0, 0, 0, 0, 0, 0, 0, 5],
            vec![0xd0, 0x05],
            vec![0xdb, 0, 0, 0, 1, b'x'],
            vec![0xde, 0, 1, 0xa1, b'k', 0xc0],
        ]);
        bodies
    }

    #[test]
    fn bodies_are_written_as_body_to_json_writes_them() {
        for body in bodies() {
            let mut out = Vec::new();
            write_body(&mut out, &body);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&json::body_to_json(&body)).unwrap(),
                "{body:02x?}"
            );
        }
    }

    #[test]
    fn records_are_written_as_serde_writes_them() {
        let mut publishes: Vec<NewEvent> = bodies()
            .into_iter()
            .map(|body| NewEvent {
                stream: "out\"s".into(),
                body: Some(body),
                meta: vec![
                    ("z".into(), "1".into()),
                    ("a".into(), "2".into()),
                    ("z".into(), "3\n".into()),
                    ("m".into(), "4".into()),
                ],
            })
            .collect();
        publishes.push(NewEvent {
            stream: "out".into(),
            body: None,
            meta: vec![("only".into(), "meta".into())],
        });
        publishes.push(NewEvent {
            stream: "out".into(),
            body: Some(vec![0xc0]),
            meta: Vec::new(),
        });
        let logs = ["info: hello \"x\"".to_string(), "stdout: a\nb".to_string()];
        let refused = ["elsewhere".to_string()];
        for (publishes, logs, refused, batch) in [
            (&publishes[..], &logs[..], &refused[..], Some(100)),
            (&[][..], &[][..], &[][..], None),
            (&publishes[..1], &[][..], &refused[..], None),
            (&[][..], &logs[..], &[][..], Some(1)),
        ] {
            let record = Record {
                id: "1700000000000-3".into(),
                outcome: "dead-letter: bad \"input\"\nsecond".into(),
                publishes: publishes.iter().map(published).collect(),
                logs: logs.to_vec(),
                refused: refused.to_vec(),
                batch,
            };
            let mut out = Vec::new();
            write_record(
                &mut out,
                &record.id,
                &record.outcome,
                publishes,
                logs,
                refused,
                batch,
            );
            let written = String::from_utf8(out).unwrap();
            assert_eq!(written, serde_json::to_string(&record).unwrap());
            assert_eq!(serde_json::from_str::<Record>(&written).unwrap(), record);
        }
    }

    #[test]
    fn only_plain_ids_are_taken_from_the_text() {
        assert_eq!(line_id(r#"{"id":"1-0","outcome":"ack"}"#), Some("1-0"));
        assert_eq!(line_id(r#"{"id":"1\"-0","outcome":"ack"}"#), None);
        assert_eq!(line_id(r#"{ "id":"1-0","outcome":"ack"}"#), None);
        assert_eq!(line_id(r#"{"outcome":"ack","id":"1-0"}"#), None);
    }
}
