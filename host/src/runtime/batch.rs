//! The packed batch encoding of `handle-events` (`type batch` in `wit/beehive.wit`).
//!
//! A batch crosses into the component as one `list<u8>`: one guest allocation and one copy
//! whatever the batch size, where a `list<event>` of records costs a guest allocation per
//! string and list (eight per event with two metadata pairs). Layout, little-endian:
//!
//! ```text
//! batch  = count:u32, event × count
//! event  = deliveries:u32, id:str, stream:str, body, meta-count:u32, (key:str, value:str) × meta-count
//! body   = 0:u8 (metadata only) | 1:u8, len:u32, bytes
//! str    = len:u32, UTF-8 bytes
//! ```

use crate::event::{EntryId, Event};

/// The WIT package version the host implements; components built for another version of
/// `beehive:broker` are refused with this named.
pub const WIT_VERSION: &str = "0.2.0";

/// Encodes `events` into `out` (cleared first; its capacity is reused from batch to batch).
///
/// # Panics
///
/// When a string, body or count exceeds `u32::MAX` bytes or items — far beyond the
/// 512 MiB limit Redis puts on a value.
pub fn encode_batch(events: &[Event], out: &mut Vec<u8>) {
    out.clear();
    put_u32(out, events.len());
    for event in events {
        out.extend_from_slice(&event.deliveries.to_le_bytes());
        put_id(out, event.id);
        put_bytes(out, event.stream.as_bytes());
        match &event.body {
            None => out.push(0),
            Some(body) => {
                out.push(1);
                put_bytes(out, body);
            }
        }
        put_u32(out, event.meta.len());
        for (key, value) in &event.meta {
            put_bytes(out, key.as_bytes());
            put_bytes(out, value.as_bytes());
        }
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).expect("batch item larger than 4 GiB");
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Writes `ms-seq` as a length-prefixed string.
fn put_id(out: &mut Vec<u8>, id: EntryId) {
    put_u32(out, id.written_len());
    id.write_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_written_as_redis_writes_them() {
        for (ms, seq) in [(0, 0), (1, 0), (1700000000000, 12), (u64::MAX, u64::MAX)] {
            let mut out = Vec::new();
            put_id(&mut out, EntryId { ms, seq });
            assert_eq!(&out[4..], format!("{ms}-{seq}").as_bytes());
            assert_eq!(out[..4], ((out.len() - 4) as u32).to_le_bytes());
        }
    }

    #[test]
    fn a_batch_is_laid_out_as_documented() {
        let events = [
            Event::new(
                "orders",
                EntryId { ms: 1, seq: 0 },
                Some(vec![0x93, 1, 2]),
                vec![("version".into(), "2".into())],
            ),
            Event::new(
                "views",
                EntryId { ms: 2, seq: 5 },
                None,
                vec![("url".into(), "/".into())],
            ),
        ];
        let mut out = vec![42; 3];
        encode_batch(&events, &mut out);
        let mut expected = Vec::new();
        expected.extend_from_slice(&2u32.to_le_bytes());
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(b"1-0");
        expected.extend_from_slice(&6u32.to_le_bytes());
        expected.extend_from_slice(b"orders");
        expected.push(1);
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(&[0x93, 1, 2]);
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&7u32.to_le_bytes());
        expected.extend_from_slice(b"version");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(b"2");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(b"2-5");
        expected.extend_from_slice(&5u32.to_le_bytes());
        expected.extend_from_slice(b"views");
        expected.push(0);
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(&3u32.to_le_bytes());
        expected.extend_from_slice(b"url");
        expected.extend_from_slice(&1u32.to_le_bytes());
        expected.extend_from_slice(b"/");
        assert_eq!(out, expected);
    }
}
