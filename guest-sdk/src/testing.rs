//! Running handlers natively, in `cargo test`: a batch encoder and in-process fakes of the
//! host's imports (only on targets other than `wasm32`).
//!
//! The fakes check a publish as the host does (an allow-list when one is set, the reserved
//! key `s`, empty keys, an event with neither body nor metadata) and record what was
//! published and logged, per thread (each test runs on its own thread).
//!
//! ```
//! use beehive_guest::testing::{self, TestEvent};
//! use beehive_guest::{Event, Outcome, Result, publish_meta};
//!
//! fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
//!     Outcome::each(events, |event| {
//!         publish_meta("seen", &[("of", event.id())])?;
//!         Ok(Outcome::Ack)
//!     })
//! }
//!
//! testing::allow_publish(&["seen"]);
//! let batch = testing::encode_batch(&[TestEvent::new("1-0", "in").meta("k", "v")]);
//! assert_eq!(testing::run(handle, &batch), Ok(vec![Outcome::Ack]));
//! let published = testing::take_published();
//! assert_eq!(published[0].stream, "seen");
//! assert_eq!(published[0].meta, [("of".to_string(), "1-0".to_string())]);
//! ```

use std::cell::RefCell;
use std::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::event::Event;
use crate::{Level, Outcome};

/// One event to put in a batch with [`encode_batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestEvent {
    /// The entry ID.
    pub id: String,
    /// The stream.
    pub stream: String,
    /// The MessagePack body, `None` for metadata only.
    pub body: Option<Vec<u8>>,
    /// Metadata pairs, in order.
    pub meta: Vec<(String, String)>,
    /// Deliveries, 1 by default.
    pub deliveries: u32,
}

impl TestEvent {
    /// An event with no body, no metadata, delivered once.
    pub fn new(id: &str, stream: &str) -> Self {
        TestEvent {
            id: id.to_string(),
            stream: stream.to_string(),
            body: None,
            meta: Vec::new(),
            deliveries: 1,
        }
    }

    /// With `value` as its body, encoded as `publish` encodes it.
    ///
    /// # Panics
    ///
    /// When `value` does not serialize.
    #[must_use]
    pub fn body<T: Serialize + ?Sized>(mut self, value: &T) -> Self {
        self.body = Some(rmp_serde::to_vec_named(value).expect("a serializable body"));
        self
    }

    /// With these raw body bytes.
    #[must_use]
    pub fn raw_body(mut self, bytes: &[u8]) -> Self {
        self.body = Some(bytes.to_vec());
        self
    }

    /// With one more metadata pair.
    #[must_use]
    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.push((key.to_string(), value.to_string()));
        self
    }

    /// Delivered `n` times.
    #[must_use]
    pub fn deliveries(mut self, n: u32) -> Self {
        self.deliveries = n;
        self
    }
}

/// Packs `events` as the host does (`type batch` in `wit/beehive.wit`).
///
/// # Panics
///
/// When a string, body or count exceeds `u32::MAX`.
pub fn encode_batch(events: &[TestEvent]) -> Vec<u8> {
    fn u32_of(n: usize) -> [u8; 4] {
        u32::try_from(n).expect("fits in a u32").to_le_bytes()
    }
    fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        out.extend_from_slice(&u32_of(b.len()));
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&u32_of(events.len()));
    for e in events {
        out.extend_from_slice(&e.deliveries.to_le_bytes());
        bytes(&mut out, e.id.as_bytes());
        bytes(&mut out, e.stream.as_bytes());
        match &e.body {
            None => out.push(0),
            Some(body) => {
                out.push(1);
                bytes(&mut out, body);
            }
        }
        out.extend_from_slice(&u32_of(e.meta.len()));
        for (k, v) in &e.meta {
            bytes(&mut out, k.as_bytes());
            bytes(&mut out, v.as_bytes());
        }
    }
    out
}

/// Runs a handler function on a packed batch exactly as the component's export does:
/// decoding, the panic hook, errors as strings. A panic unwinds natively, so it comes back
/// as `Err("panic: <message> (at <file>:<line>:<column>)")`.
pub fn run<F, E>(handler: F, batch: &[u8]) -> std::result::Result<Vec<Outcome>, String>
where
    F: Fn(&[Event<'_>]) -> std::result::Result<Vec<Outcome>, E>,
    E: Display,
{
    crate::export::run_function(&handler, batch)
}

/// An event the handler published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The target stream.
    pub stream: String,
    /// The MessagePack body, `None` for metadata only.
    pub body: Option<Vec<u8>>,
    /// Metadata pairs, in order.
    pub meta: Vec<(String, String)>,
}

impl Published {
    /// Decodes the body.
    pub fn unserialize<T: DeserializeOwned>(&self) -> Result<T> {
        let body = self
            .body
            .as_deref()
            .ok_or_else(|| Error::bad_input("the event has no body"))?;
        rmp_serde::from_slice(body).map_err(Error::bad_input)
    }
}

#[derive(Default)]
struct Fake {
    allow: Option<Vec<String>>,
    published: Vec<Published>,
    logs: Vec<(Level, String)>,
}

thread_local! {
    static FAKE: RefCell<Fake> = RefCell::new(Fake::default());
}

/// Refuses, from now on in this thread, publishes to streams not in `streams` (as the
/// host does with the group's `publish` allow-list). By default every stream is allowed.
pub fn allow_publish(streams: &[&str]) {
    FAKE.with(|f| f.borrow_mut().allow = Some(streams.iter().map(|s| s.to_string()).collect()));
}

/// Allows publishing to every stream again.
pub fn allow_any_publish() {
    FAKE.with(|f| f.borrow_mut().allow = None);
}

/// What was published in this thread since the last call.
pub fn take_published() -> Vec<Published> {
    FAKE.with(|f| std::mem::take(&mut f.borrow_mut().published))
}

/// What was logged in this thread since the last call.
pub fn take_logs() -> Vec<(Level, String)> {
    FAKE.with(|f| std::mem::take(&mut f.borrow_mut().logs))
}

pub(crate) fn fake_publish(
    stream: &str,
    body: Option<&[u8]>,
    meta: &[(String, String)],
) -> std::result::Result<(), String> {
    FAKE.with(|f| {
        let mut f = f.borrow_mut();
        if let Some(allow) = &f.allow
            && !allow.iter().any(|s| s == stream)
        {
            return Err(format!(
                "stream {stream} is not in this group's publish allow-list"
            ));
        }
        if body.is_none() && meta.is_empty() {
            return Err(format!(
                "event for stream {stream} has neither body nor metadata"
            ));
        }
        for (key, _) in meta {
            let reason = match key.as_str() {
                "s" => "the key s is reserved for the body",
                "" => "keys may not be empty",
                _ => continue,
            };
            return Err(format!(
                "invalid metadata key {key:?} for stream {stream}: {reason}"
            ));
        }
        f.published.push(Published {
            stream: stream.to_string(),
            body: body.map(<[u8]>::to_vec),
            meta: meta.to_vec(),
        });
        Ok(())
    })
}

pub(crate) fn fake_log(level: Level, message: &str) {
    FAKE.with(|f| f.borrow_mut().logs.push((level, message.to_string())));
}
