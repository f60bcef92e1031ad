//! Events as a handler sees them, decoded from the host's packed batch without copying.
//!
//! The batch encoding (little-endian, `wit/beehive.wit` documents the same layout):
//!
//! ```text
//! batch  = count:u32, event × count
//! event  = deliveries:u32, id:str, stream:str, body, meta-count:u32, (key:str, value:str) × meta-count
//! body   = 0:u8 (no body) | 1:u8, len:u32, bytes
//! str    = len:u32, UTF-8 bytes
//! ```

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};

/// One event of a batch, borrowed from the bytes the host passed to `handle-events`.
///
/// `Event` is `Copy` (a handful of references): its methods take it by value and return
/// references that live as long as the batch, not the `Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The stream entry ID, e.g. `1700000000000-0`.
    pub id: &'a str,
    /// The stream the entry was read from.
    pub stream: &'a str,
    /// The MessagePack body; `None` for a metadata-only event.
    pub body: Option<&'a [u8]>,
    /// Metadata pairs, in publish order.
    pub meta: &'a [(&'a str, &'a str)],
    /// How many times this entry has been delivered to the group; 1 the first time.
    pub deliveries: u32,
}

impl<'a> Event<'a> {
    /// The entry ID, e.g. `1700000000000-0`.
    pub fn id(self) -> &'a str {
        self.id
    }

    /// The stream the entry was read from.
    pub fn stream(self) -> &'a str {
        self.stream
    }

    /// The MessagePack body; `None` for a metadata-only event.
    pub fn body(self) -> Option<&'a [u8]> {
        self.body
    }

    /// The metadata pairs, in publish order.
    pub fn meta(self) -> &'a [(&'a str, &'a str)] {
        self.meta
    }

    /// How many times the group has delivered this entry; 1 the first time.
    pub fn deliveries(self) -> u32 {
        self.deliveries
    }

    /// Whether this entry was delivered before (and not acknowledged then).
    pub fn is_redelivery(self) -> bool {
        self.deliveries > 1
    }

    /// The value of metadata `key` (its first occurrence), `""` when missing.
    pub fn tag(self, key: &str) -> &'a str {
        self.try_tag(key).unwrap_or("")
    }

    /// The value of metadata `key` (its first occurrence), `None` when missing.
    pub fn try_tag(self, key: &str) -> Option<&'a str> {
        self.meta.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The value of metadata `key`, or a [`ErrorKind::BadInput`] error naming it when
    /// missing: `let url = event.require_tag("url")?;`
    pub fn require_tag(self, key: &str) -> Result<&'a str> {
        self.try_tag(key)
            .ok_or_else(|| Error::bad_input(format_args!("the event has no {key:?} tag")))
    }

    /// Decodes the MessagePack body into `T` (structs from maps keyed by field name, as
    /// BeeORM and `publish` write them). Borrowing types (`&'a str`, `&'a [u8]` with
    /// `serde_bytes`) borrow from the batch.
    ///
    /// A missing body or one that does not decode is an [`ErrorKind::BadInput`] error.
    pub fn unserialize<T: Deserialize<'a>>(self) -> Result<T> {
        let body = self
            .body
            .ok_or_else(|| Error::bad_input("the event has no body"))?;
        rmp_serde::from_slice(body).map_err(Error::bad_input)
    }
}

/// The methods that are now on [`Event`] itself, kept so that code importing this trait
/// still builds. Deprecated: drop the import.
#[doc(hidden)]
pub trait EventExt {
    /// The entry ID.
    fn id(&self) -> &str;
    /// The stream it came from.
    fn stream(&self) -> &str;
    /// The value of metadata `key`, `""` when missing.
    fn tag(&self, key: &str) -> &str;
    /// Decodes the MessagePack body.
    fn unserialize<T: DeserializeOwned>(&self) -> Result<T>;
}

impl EventExt for Event<'_> {
    fn id(&self) -> &str {
        self.id
    }
    fn stream(&self) -> &str {
        self.stream
    }
    fn tag(&self, key: &str) -> &str {
        Event::tag(*self, key)
    }
    fn unserialize<T: DeserializeOwned>(&self) -> Result<T> {
        Event::unserialize(*self)
    }
}

/// The error type `unserialize` returned before the SDK had one error type.
#[doc(hidden)]
pub type DecodeError = Error;

/// Where one event's parts lie in the batch, before its metadata slice can be borrowed.
#[derive(Debug)]
struct Parts<'a> {
    id: &'a str,
    stream: &'a str,
    body: Option<&'a [u8]>,
    meta: std::ops::Range<usize>,
    deliveries: u32,
}

/// A decoded batch: the events' metadata pairs, which the events borrow.
///
/// Decoding validates the whole batch once (lengths and UTF-8); it allocates one vector of
/// metadata pairs and one of events per batch, never per event.
#[derive(Debug)]
pub struct Batch<'a> {
    parts: Vec<Parts<'a>>,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Batch<'a> {
    /// Decodes a batch in the packed encoding; the error names the offset where it is
    /// malformed.
    pub fn decode(bytes: &'a [u8]) -> Result<Self> {
        let mut reader = Reader { bytes, at: 0 };
        let count = reader.u32()? as usize;
        // Every event takes at least 21 bytes: do not trust `count` for the allocation.
        let mut parts = Vec::with_capacity(count.min(bytes.len() / 21));
        let mut pairs = Vec::new();
        for _ in 0..count {
            let deliveries = reader.u32()?;
            let id = reader.str()?;
            let stream = reader.str()?;
            let body = match reader.u8()? {
                0 => None,
                1 => Some(reader.bytes()?),
                other => return Err(reader.error(&format!("body flag {other}"))),
            };
            let meta_count = reader.u32()? as usize;
            let start = pairs.len();
            for _ in 0..meta_count {
                pairs.push((reader.str()?, reader.str()?));
            }
            parts.push(Parts {
                id,
                stream,
                body,
                meta: start..pairs.len(),
                deliveries,
            });
        }
        if reader.at != bytes.len() {
            return Err(reader.error("trailing bytes"));
        }
        Ok(Batch { parts, pairs })
    }

    /// The events, in delivery order.
    pub fn events(&self) -> Vec<Event<'_>> {
        self.parts
            .iter()
            .map(|p| Event {
                id: p.id,
                stream: p.stream,
                body: p.body,
                meta: &self.pairs[p.meta.clone()],
                deliveries: p.deliveries,
            })
            .collect()
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Batch,
            format_args!("malformed event batch at byte {}: {what}", self.at),
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| self.error("truncated"))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn str(&mut self) -> Result<&'a str> {
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| {
            Reader {
                bytes: self.bytes,
                at: self.at - bytes.len(),
            }
            .error("a string is not UTF-8")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&2u32.to_le_bytes());
        // A body and two pairs.
        b.extend_from_slice(&1u32.to_le_bytes());
        str(&mut b, "1-0");
        str(&mut b, "orders");
        b.push(1);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[0x92, 1, 2]);
        b.extend_from_slice(&2u32.to_le_bytes());
        str(&mut b, "version");
        str(&mut b, "2");
        str(&mut b, "ip");
        str(&mut b, "");
        // Metadata only, third delivery.
        b.extend_from_slice(&3u32.to_le_bytes());
        str(&mut b, "1700000000000-12");
        str(&mut b, "views");
        b.push(0);
        b.extend_from_slice(&1u32.to_le_bytes());
        str(&mut b, "url");
        str(&mut b, "/ü");
        b
    }

    #[test]
    fn decodes_bodies_metadata_and_deliveries() {
        let bytes = sample();
        let batch = Batch::decode(&bytes).unwrap();
        let events = batch.events();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id(), "1-0");
        assert_eq!(events[0].stream(), "orders");
        assert_eq!(events[0].body, Some(&[0x92, 1, 2][..]));
        assert_eq!(events[0].meta, &[("version", "2"), ("ip", "")]);
        assert_eq!(events[0].tag("version"), "2");
        assert_eq!(events[0].tag("missing"), "");
        assert_eq!(events[0].unserialize::<Vec<u8>>().unwrap(), vec![1, 2]);
        assert_eq!(events[0].deliveries, 1);
        assert_eq!(events[1].id, "1700000000000-12");
        assert_eq!(events[1].body, None);
        assert_eq!(events[1].tag("url"), "/ü");
        assert_eq!(events[1].deliveries, 3);
        let err = events[1].unserialize::<u8>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadInput);
        assert_eq!(err.to_string(), "the event has no body");
    }

    #[test]
    fn an_empty_batch_is_four_zero_bytes() {
        assert!(Batch::decode(&[0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn malformed_batches_are_errors_never_panics() {
        let bytes = sample();
        // Every truncation is refused.
        for end in 0..bytes.len() {
            let err = Batch::decode(&bytes[..end]).expect_err("truncated");
            assert_eq!(err.kind(), ErrorKind::Batch);
            assert!(
                err.message().starts_with("malformed event batch at byte"),
                "{err}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(
            Batch::decode(&trailing)
                .unwrap_err()
                .message()
                .contains("trailing")
        );
        let mut flag = bytes.clone();
        flag[4 + 4 + 7 + 10] = 7;
        assert!(
            Batch::decode(&flag)
                .unwrap_err()
                .message()
                .contains("body flag 7")
        );
        let mut utf8 = bytes.clone();
        utf8[4 + 4 + 4] = 0xff;
        assert_eq!(
            Batch::decode(&utf8).unwrap_err().message(),
            "malformed event batch at byte 12: a string is not UTF-8"
        );
        // A huge count with no events behind it neither allocates nor panics.
        assert!(Batch::decode(&u32::MAX.to_le_bytes()).is_err());
    }
}
