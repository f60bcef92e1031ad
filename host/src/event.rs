//! Events: what a consumer receives, what a publisher sends, and their wire format.
//!
//! One event is one stream entry: `XADD <stream> * [s <body>] [k1 v1 ...]`, where `s` holds
//! the body as MessagePack (structs as maps keyed by field name) and every other field is a
//! metadata pair.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub mod json;
#[cfg(test)]
mod json_tests;

/// The reserved stream-entry field that carries the MessagePack body.
pub const BODY_FIELD: &str = "s";

/// An event read from a stream by a consumer.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub(crate) id: EntryId,
    pub(crate) stream: Arc<str>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) deliveries: u32,
}

impl Event {
    /// An event as a consumer would receive it on its first delivery: for testing handlers
    /// and for hosts that read entries themselves. `body` is the raw MessagePack.
    pub fn new(
        stream: &str,
        id: EntryId,
        body: Option<Vec<u8>>,
        meta: Vec<(String, String)>,
    ) -> Self {
        Event {
            id,
            stream: Arc::from(stream),
            body,
            meta,
            deliveries: 1,
        }
    }

    /// The same event on its `deliveries`-th delivery (for testing handlers of
    /// redelivered events).
    pub fn with_deliveries(mut self, deliveries: u32) -> Self {
        self.deliveries = deliveries;
        self
    }

    /// The stream entry ID, e.g. `1700000000000-0`.
    pub fn id(&self) -> String {
        self.id.to_string()
    }

    /// The entry ID in parsed form.
    pub fn entry_id(&self) -> EntryId {
        self.id
    }

    /// The stream the event was read from.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The value of metadata key `key`, or `""` when the event has no such key.
    pub fn tag(&self, key: &str) -> &str {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// Every metadata pair, in the order they were published.
    pub fn meta(&self) -> &[(String, String)] {
        &self.meta
    }

    /// The raw MessagePack body, or `None` for a metadata-only event.
    pub fn body(&self) -> Option<&[u8]> {
        self.body.as_deref()
    }

    /// How many times this event has been delivered to the group, 1 on first delivery.
    pub fn deliveries(&self) -> u32 {
        self.deliveries
    }

    /// Decodes the MessagePack body into `T`.
    ///
    /// Fails with a message naming the event when it has no body or the body does not decode
    /// into `T`.
    pub fn unserialize<T: DeserializeOwned>(&self) -> Result<T> {
        let body = self
            .body
            .as_deref()
            .ok_or_else(|| self.decode_error("the event has no body".into()))?;
        rmp_serde::from_slice(body).map_err(|e| self.decode_error(e.to_string()))
    }

    /// The body in Beehive's lossless JSON form (see [`json`]: bytes, ext types such as
    /// timestamps, non-string map keys and floats are tagged, everything else is plain
    /// JSON), or `None` for a metadata-only event.
    pub fn body_json(&self) -> Option<Result<serde_json::Value>> {
        self.body
            .as_deref()
            .map(|body| json::to_json(body).map_err(|e| self.decode_error(e.to_string())))
    }

    fn decode_error(&self, message: String) -> Error {
        Error::Decode {
            id: self.id(),
            stream: self.stream.to_string(),
            message,
        }
    }

    /// Builds an event from a stream entry's fields (binary-safe; non-UTF-8 metadata is
    /// replaced lossily).
    pub(crate) fn from_fields(
        stream: Arc<str>,
        id: EntryId,
        fields: impl Iterator<Item = (Vec<u8>, Vec<u8>)>,
        pairs: usize,
    ) -> Self {
        let mut body = None;
        let mut meta = Vec::with_capacity(pairs);
        for (key, value) in fields {
            if key == BODY_FIELD.as_bytes() && body.is_none() {
                body = Some(value);
            } else {
                meta.push((into_string(key), into_string(value)));
            }
        }
        Event {
            id,
            stream,
            body,
            meta,
            deliveries: 1,
        }
    }
}

fn into_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Encodes a body the way Beehive stores it: MessagePack with structs as maps.
pub fn encode_body<T: Serialize + ?Sized>(stream: &str, body: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec_named(body).map_err(|e| Error::Encode {
        stream: stream.to_string(),
        message: e.to_string(),
    })
}

/// An event about to be published: checked, encoded, not yet sent.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub(crate) stream: String,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) meta: Vec<(String, String)>,
}

impl NewEvent {
    /// Checks an event before it is buffered or sent: it needs a body or metadata, and no
    /// metadata key may be empty or `s`.
    pub fn new(stream: &str, body: Option<Vec<u8>>, meta: Vec<(String, String)>) -> Result<Self> {
        if body.is_none() && meta.is_empty() {
            return Err(Error::EmptyEvent(stream.to_string()));
        }
        for (key, _) in &meta {
            let reason = if key == BODY_FIELD {
                "the key s is reserved for the body"
            } else if key.is_empty() {
                "keys may not be empty"
            } else {
                continue;
            };
            return Err(Error::InvalidMetaKey {
                stream: stream.to_string(),
                key: key.clone(),
                reason,
            });
        }
        Ok(Self {
            stream: stream.to_string(),
            body,
            meta,
        })
    }

    /// The target stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The entry's fields as stored: `s` first (when there is a body), then the metadata.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.body
            .as_deref()
            .map(|b| (BODY_FIELD.as_bytes(), b))
            .into_iter()
            .chain(self.meta.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }
}

/// Converts `&[("k", "v")]`-style metadata into owned pairs.
pub(crate) fn owned_meta<K: AsRef<str>, V: AsRef<str>>(meta: &[(K, V)]) -> Vec<(String, String)> {
    meta.iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect()
}

/// A stream entry ID (`<milliseconds>-<sequence>`), ordered as Redis orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EntryId {
    /// Milliseconds since the Unix epoch (Redis server time at XADD).
    pub ms: u64,
    /// Sequence number within the millisecond.
    pub seq: u64,
}

impl EntryId {
    /// The smallest ID, `0-0`.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// The ID just before this one (`0-0` stays `0-0`).
    pub fn predecessor(self) -> EntryId {
        match (self.ms, self.seq) {
            (0, 0) => self,
            (ms, 0) => EntryId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            (ms, seq) => EntryId { ms, seq: seq - 1 },
        }
    }

    /// The next possible ID after this one.
    pub fn successor(self) -> EntryId {
        match self.seq.checked_add(1) {
            Some(seq) => EntryId { ms: self.ms, seq },
            None => EntryId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl EntryId {
    /// Appends `ms-seq` to `out` as Redis writes it, without going through `fmt` (the hot
    /// path of commits and packed batches).
    pub(crate) fn write_to(self, out: &mut Vec<u8>) {
        let mut digits = [0u8; 41];
        let mut at = digits.len();
        for (i, mut n) in [self.seq, self.ms].into_iter().enumerate() {
            if i == 1 {
                at -= 1;
                digits[at] = b'-';
            }
            loop {
                at -= 1;
                digits[at] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
        }
        out.extend_from_slice(&digits[at..]);
    }

    /// The length of [`write_to`](Self::write_to)'s output.
    pub(crate) fn written_len(self) -> usize {
        fn digits(n: u64) -> usize {
            n.checked_ilog10().map_or(1, |d| d as usize + 1)
        }
        digits(self.ms) + 1 + digits(self.seq)
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EntryId {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        match (ms.parse(), seq.parse()) {
            (Ok(ms), Ok(seq)) => Ok(EntryId { ms, seq }),
            _ => Err(format!(
                "invalid stream entry ID {s:?}: expected <ms>-<seq>"
            )),
        }
    }
}

impl PartialOrd<EntryId> for &EntryId {
    fn partial_cmp(&self, other: &EntryId) -> Option<Ordering> {
        Some((*self).cmp(other))
    }
}

impl PartialEq<EntryId> for &EntryId {
    fn eq(&self, other: &EntryId) -> bool {
        **self == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_body_is_messagepack() {
        assert_eq!(encode_body("s", "a1").unwrap(), vec![0xA2, 0x61, 0x31]);
    }

    #[test]
    fn structs_are_maps_keyed_by_field_name() {
        #[derive(Serialize)]
        struct Color {
            color: String,
        }
        let bytes = encode_body(
            "s",
            &Color {
                color: "red".into(),
            },
        )
        .unwrap();
        assert_eq!(bytes[0], 0x81, "a map of one entry");
        assert_eq!(&bytes[1..7], b"\xa5color");
    }

    #[test]
    fn empty_and_reserved_are_refused() {
        assert!(matches!(
            NewEvent::new("x", None, vec![]),
            Err(Error::EmptyEvent(_))
        ));
        let err = NewEvent::new("x", None, vec![("s".into(), "1".into())]).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }

    #[test]
    fn ids_order_and_succeed() {
        let a: EntryId = "5-18446744073709551615".parse().unwrap();
        assert_eq!(a.successor(), EntryId { ms: 6, seq: 0 });
        assert!("1-2".parse::<EntryId>().unwrap() < "2-0".parse().unwrap());
        assert!("x".parse::<EntryId>().is_err());
    }
}
