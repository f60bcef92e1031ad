//! A page of an outbox as the relay holds it: outputs whose fields stay in the bytes Redis
//! sent, so delivering one copies those bytes into the target's `XADD` as they are.
//!
//! An `XRANGE` reply encodes each field as a RESP bulk string, exactly as a command's
//! argument is encoded: an output's fields after its target pair are already the tail of
//! the `XADD` that writes it. A page is read as one buffer ([`parse_page`]) and each
//! [`Output`] points into it; nothing is allocated per field.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use redis::RedisResult;

use super::commands::RawEntry;
use super::resp::{Cursor, protocol};
use crate::event::EntryId;
use crate::keys;

/// One output waiting in an outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Output {
    /// Its outbox entry ID.
    pub(crate) id: EntryId,
    /// The stream it goes to (`None`: a malformed outbox entry).
    pub(crate) target: Option<Arc<str>>,
    /// Its fields, as published (`s` for the body, then metadata).
    pub(crate) fields: Fields,
}

/// The fields of an output: RESP bulk strings, field and value in turn, in a buffer that
/// may be shared with the rest of its page. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Fields {
    bytes: Arc<Vec<u8>>,
    range: Range<usize>,
    pairs: usize,
}

impl Fields {
    /// Fields of their own, encoded from `pairs`.
    pub(crate) fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Fields {
        let mut bytes = Vec::new();
        let mut n = 0;
        for (k, v) in pairs {
            write_bulk(&mut bytes, k.as_ref());
            write_bulk(&mut bytes, v.as_ref());
            n += 1;
        }
        Fields {
            range: 0..bytes.len(),
            bytes: Arc::new(bytes),
            pairs: n,
        }
    }

    /// How many field-value pairs.
    pub(crate) fn len(&self) -> usize {
        self.pairs
    }

    /// The pairs, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        // Checked when the fields were made: `pairs` pairs of bulk strings fill the range.
        let mut cursor = Cursor::new(&self.bytes[self.range.clone()]);
        let mut next = move || cursor.bulk().ok().flatten();
        std::iter::from_fn(move || Some((next()?, next()?))).take(self.pairs)
    }

    /// The pairs as RESP bulk strings, as they follow the key and ID in an `XADD`.
    pub(crate) fn resp(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

impl PartialEq for Fields {
    fn eq(&self, other: &Fields) -> bool {
        self.pairs == other.pairs && self.resp() == other.resp()
    }
}

impl Eq for Fields {}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// Appends `bytes` to `out` as a RESP bulk string.
pub(crate) fn write_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Reads the outputs of an `XRANGE` reply over an outbox (its bytes, whole and well-formed
/// RESP2, as [`super::page_reader::PageReader::send_raw`] returns them). An entry whose
/// first field is not its target keeps all its fields and has no target (the relay
/// dead-letters it); an odd trailing field has no value and is left out.
pub(crate) fn parse_page(bytes: Vec<u8>) -> RedisResult<Vec<Output>> {
    let bytes = Arc::new(bytes);
    let mut cursor = Cursor::new(&bytes);
    let Some(n) = cursor.array()? else {
        return Ok(Vec::new());
    };
    // A page's outputs mostly go to a few streams: one `Arc<str>` each.
    let mut targets: Vec<Arc<str>> = Vec::new();
    // Each entry takes at least 10 bytes (`*2\r\n$3\r\n0-0\r\n*-1\r\n`, less one).
    let mut outputs = Vec::with_capacity(n.min(bytes.len() / 10));
    for _ in 0..n {
        if cursor.array()? != Some(2) {
            return Err(protocol("an outbox entry that is not [id, fields]"));
        }
        let id = cursor
            .bulk()?
            .and_then(|id| std::str::from_utf8(id).ok()?.parse::<EntryId>().ok())
            .ok_or_else(|| protocol("an outbox entry ID"))?;
        let count = cursor.array()?.unwrap_or(0);
        let start = cursor.position();
        // After the target pair, and after the last whole pair.
        let (mut first, mut end) = (start, start);
        let (mut key_is_target, mut target) = (false, None);
        for i in 0..count {
            let value = cursor
                .bulk()?
                .ok_or_else(|| protocol("a null outbox entry field"))?;
            match i {
                0 => key_is_target = value == keys::OUTBOX_TARGET.as_bytes(),
                1 if key_is_target => {
                    target = intern(&mut targets, value);
                    first = cursor.position();
                }
                _ => {}
            }
            if i % 2 == 1 {
                end = cursor.position();
            }
        }
        let (from, pairs) = match target {
            Some(_) => (first, count / 2 - 1),
            None => (start, count / 2),
        };
        outputs.push(Output {
            id,
            target,
            fields: Fields {
                bytes: bytes.clone(),
                range: from..end,
                pairs,
            },
        });
    }
    Ok(outputs)
}

/// The target named by `name` (shared with earlier outputs of the page that go there), or
/// `None` when it is not UTF-8.
fn intern(targets: &mut Vec<Arc<str>>, name: &[u8]) -> Option<Arc<str>> {
    if let Some(known) = targets.iter().find(|t| t.as_bytes() == name) {
        return Some(known.clone());
    }
    let target: Arc<str> = Arc::from(std::str::from_utf8(name).ok()?);
    if targets.len() < 16 {
        targets.push(target.clone());
    }
    Some(target)
}

impl Output {
    /// An output read through redis-rs (a cluster, TLS or RESP3 connection).
    pub(crate) fn from_entry(entry: RawEntry) -> Output {
        let mut flat = entry
            .fields
            .unwrap_or_default()
            .into_iter()
            .map(|v| super::commands::bytes(v).unwrap_or_default());
        let mut pairs = Vec::new();
        while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
            pairs.push((k, v));
        }
        let target = match pairs.first() {
            Some((k, v)) if k == keys::OUTBOX_TARGET.as_bytes() => {
                std::str::from_utf8(v).ok().map(Arc::from)
            }
            _ => None,
        };
        let skip = usize::from(target.is_some());
        Output {
            id: entry.id,
            target,
            fields: Fields::from_pairs(pairs.into_iter().skip(skip)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// The RESP2 bytes of `value`, as Redis would send it.
    fn encode(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match value {
            Value::Nil => out.extend_from_slice(b"*-1\r\n"),
            Value::BulkString(b) => write_bulk(&mut out, b),
            Value::Array(items) => {
                out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                for item in items {
                    out.extend_from_slice(&encode(item));
                }
            }
            other => panic!("not in an XRANGE reply: {other:?}"),
        }
        out
    }

    fn entry(id: &str, fields: Option<&[&str]>) -> Value {
        Value::Array(vec![
            bulk(id),
            fields.map_or(Value::Nil, |f| {
                Value::Array(f.iter().map(|s| bulk(s)).collect())
            }),
        ])
    }

    /// What redis-rs's path makes of the same reply: the reference.
    fn through_redis_rs(reply: &Value) -> Vec<Output> {
        super::super::commands::parse_entries(reply.clone())
            .unwrap()
            .into_iter()
            .map(Output::from_entry)
            .collect()
    }

    #[test]
    fn a_page_read_from_its_bytes_is_what_redis_rs_reads() {
        let reply = Value::Array(vec![
            entry(
                "1-0",
                Some(&["beehive.target", "a", "s", "body", "of", "1-0"]),
            ),
            entry("1-1", Some(&["beehive.target", "b", "s", ""])),
            entry("2-0", Some(&["beehive.target", "a"])),
            // Not an output: no target, every field kept.
            entry("3-0", Some(&["s", "x", "beehive.target", "a"])),
            // An odd trailing field has no value.
            entry("4-0", Some(&["beehive.target", "a", "s", "y", "z"])),
            entry("5-0", Some(&[])),
            entry("6-0", None),
            // A target that is not UTF-8 is no target.
            Value::Array(vec![
                bulk("7-0"),
                Value::Array(vec![
                    bulk("beehive.target"),
                    Value::BulkString(vec![0xff]),
                    bulk("s"),
                    bulk("v"),
                ]),
            ]),
        ]);
        let page = parse_page(encode(&reply)).unwrap();
        assert_eq!(page, through_redis_rs(&reply));
        assert_eq!(page[0].target.as_deref(), Some("a"));
        let fields: Vec<_> = page[0].fields.iter().collect();
        assert_eq!(
            fields,
            [(&b"s"[..], &b"body"[..]), (&b"of"[..], &b"1-0"[..])]
        );
        assert_eq!(
            page[0].fields.resp(),
            b"$1\r\ns\r\n$4\r\nbody\r\n$2\r\nof\r\n$3\r\n1-0\r\n"
        );
        assert_eq!(page[2].fields.len(), 0);
        assert_eq!(page[3].target, None);
        assert_eq!(page[3].fields.len(), 2);
        assert_eq!(page[4].fields.len(), 1);
        assert_eq!(page[7].target, None);
        assert!(parse_page(b"*0\r\n".to_vec()).unwrap().is_empty());
        assert!(parse_page(b"*-1\r\n".to_vec()).unwrap().is_empty());
    }

    #[test]
    fn a_page_that_is_not_entries_is_an_error() {
        for reply in [
            Value::Array(vec![bulk("1-0")]),
            Value::Array(vec![entry("not an id", Some(&[]))]),
            Value::Array(vec![Value::Array(vec![bulk("1-0")])]),
            Value::Array(vec![Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("s"), Value::Array(vec![])]),
            ])]),
        ] {
            assert!(parse_page(encode(&reply)).is_err(), "{reply:?}");
        }
        assert!(parse_page(b":1\r\n".to_vec()).is_err());
    }

    #[test]
    fn fields_made_from_pairs_encode_them() {
        let fields = Fields::from_pairs([("k", "v"), ("", "\r\n")]);
        assert_eq!(fields.len(), 2);
        assert_eq!(
            fields.resp(),
            b"$1\r\nk\r\n$1\r\nv\r\n$0\r\n\r\n$2\r\n\r\n\r\n"
        );
        let pairs: Vec<_> = fields.iter().collect();
        assert_eq!(pairs, [(&b"k"[..], &b"v"[..]), (&b""[..], &b"\r\n"[..])]);
        assert_eq!(fields, Fields::from_pairs([("k", "v"), ("", "\r\n")]));
        assert_ne!(fields, Fields::from_pairs([("k", "v")]));
    }
}
