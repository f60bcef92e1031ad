//! # beehive-guest
//!
//! Write Beehive event handlers in Rust. Build with `cargo build --target wasm32-wasip2`:
//! the output is already a WebAssembly component implementing the `beehive:broker/consumer`
//! world (`wit/beehive.wit`).
//!
//! A handler is a function from a batch of [`Event`]s to one [`Outcome`] per event;
//! [`export_handler!`] makes it the component's export. [`Error`] is the one error type of
//! decoding, unserializing and publishing, so `?` works on all of them:
//!
//! ```
//! use beehive_guest::{Error, Event, Outcome, Result, info, publish};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct Order {
//!     total: f64,
//! }
//!
//! #[derive(Serialize)]
//! struct Receipt<'a> {
//!     order: &'a str,
//!     cents: i64,
//! }
//!
//! fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
//!     // Per event: `Ok(outcome)`; bad input (no body, a body that does not decode,
//!     // `Error::bad_input`) is dead-lettered; any other error fails (retries) the batch.
//!     Outcome::each(events, |event| {
//!         info!("{} {} version={}", event.stream(), event.id(), event.tag("version"));
//!         if event.stream() != "orders" {
//!             return Ok(Outcome::Ack);
//!         }
//!         let order: Order = event.unserialize()?;
//!         if order.total < 0.0 {
//!             return Err(Error::bad_input(format!("negative total {}", order.total)));
//!         }
//!         let receipt = Receipt { order: event.id(), cents: (order.total * 100.0).round() as i64 };
//!         publish("receipts", &receipt, &[("order", event.id())])?;
//!         Ok(Outcome::Ack)
//!     })
//! }
//!
//! beehive_guest::export_handler!(handle);
//! ```
//!
//! Helpers:
//!
//! - [`Event`]: `id()`, `stream()`, `tag(key)`, `try_tag`, `require_tag`, `unserialize()`,
//!   `deliveries()`; the fields are public too;
//! - [`Outcome`]: `Ack`, [`Outcome::retry`], [`Outcome::dead_letter`], [`Outcome::each`],
//!   [`Outcome::all_ack`], [`Outcome::ack_or_dead_letter`], [`Outcome::ack_or_retry`];
//! - [`publish`] (a serde value, MessagePack with structs as maps), [`publish_meta`],
//!   [`publish_raw`]: buffered by the host and committed with the batch's acknowledgement;
//! - [`trace!`], [`debug!`], [`info!`], [`warn!`], [`error!`]: `format!`-style logging
//!   through the host's log.
//!
//! **Panics.** A panic in a handler cannot unwind on `wasm32-wasip2` (std aborts, and the
//! component traps). The export installs a panic hook that first logs, at `error` level
//! through the host's `logging.log`, one line starting with [`PANIC_PREFIX`]
//! (`"panic: "`) followed by the panic message and its location; the host reports that line
//! as the batch error of the trap that follows. Where panics do unwind (native tests with
//! [`testing`]), the batch fails with that same line as its error string.
//!
//! **Testing natively.** On targets other than `wasm32`, the host's imports are replaced by
//! the in-process fakes of [`testing`], so `cargo test` can run a handler on a batch and
//! inspect what it published and logged.

#![warn(missing_docs)]

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "consumer",
        pub_export_macro: true,
        default_bindings_module: "beehive_guest::bindings",
        additional_derives: [PartialEq, Eq],
    });
}

mod error;
mod event;
mod export;
mod host;
mod outcome;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

use serde::Serialize;

use bindings::beehive::broker::{logging, types};

pub use error::{Error, ErrorKind, Result};
pub use event::{Batch, Event};
#[doc(hidden)]
pub use event::{DecodeError, EventExt};
#[doc(hidden)]
pub use export::__private;
pub use export::PANIC_PREFIX;

/// What a handler decided for one event: `Ack`, `Retry(reason)` or `DeadLetter(reason)`.
/// See the helpers in `impl Outcome`.
pub use types::Outcome;

/// Log levels of [`log`] and the logging macros.
pub use logging::Level;

/// The batch-level handler trait of earlier versions, kept so existing handlers build.
///
/// A function `fn(&[Event]) -> Result<Vec<Outcome>>` passed to [`export_handler!`] is the
/// simpler form; a type implementing this trait (a unit struct) still works there too. The
/// SDK's errors convert into `String`, so `?` works in `handle`.
pub trait Handler {
    /// Handles one batch: one outcome per event, in order; `Err` fails (retries) the
    /// whole batch.
    fn handle(events: &[Event]) -> std::result::Result<Vec<Outcome>, String>;
}

/// Publishes `body` (encoded as MessagePack, structs as maps keyed by field name) with
/// `meta` to `stream`, committed with the batch's acknowledgement: if the batch fails,
/// nothing is published.
///
/// Fails with [`ErrorKind::Publish`] when the host refuses the event (a stream outside the
/// group's `publish` allow-list, the reserved key `s`, too many publishes in one batch), or
/// [`ErrorKind::Encode`] when `body` does not serialize. Without metadata, pass
/// [`NO_META`].
pub fn publish<T: Serialize + ?Sized, K: AsRef<str>, V: AsRef<str>>(
    stream: &str,
    body: &T,
    meta: &[(K, V)],
) -> Result<()> {
    let body = rmp_serde::to_vec_named(body)
        .map_err(|e| Error::new(ErrorKind::Encode, format_args!("publish to {stream}: {e}")))?;
    publish_raw(stream, Some(&body), meta)
}

/// Publishes an already encoded MessagePack body (`None` for metadata only).
pub fn publish_raw<K: AsRef<str>, V: AsRef<str>>(
    stream: &str,
    body: Option<&[u8]>,
    meta: &[(K, V)],
) -> Result<()> {
    let meta: Vec<(String, String)> = meta
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    host::publish(stream, body, &meta).map_err(|refused| {
        Error::new(
            ErrorKind::Publish,
            format_args!("publish to {stream}: {refused}"),
        )
    })
}

/// Publishes a metadata-only event.
pub fn publish_meta<K: AsRef<str>, V: AsRef<str>>(stream: &str, meta: &[(K, V)]) -> Result<()> {
    publish_raw(stream, None, meta)
}

/// No metadata, for [`publish`]: `publish("totals", &total, NO_META)?`.
pub const NO_META: &[(&str, &str)] = &[];

/// Writes one line to the host's log (labelled with the group and consumer). The macros
/// [`info!`] and friends format their arguments first.
pub fn log(level: Level, message: &str) {
    host::log(level, message)
}

/// Logs at debug level; [`debug!`] takes format arguments.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs at info level; [`info!`] takes format arguments.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at warn level; [`warn!`] takes format arguments.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at error level; [`error!`] takes format arguments.
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// Logs at trace level through the host, `format!`-style: `trace!("{} bytes", n)`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Trace, &::std::format!($($arg)+))
    };
}

/// Logs at debug level through the host, `format!`-style: `debug!("{:?}", event)`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Debug, &::std::format!($($arg)+))
    };
}

/// Logs at info level through the host, `format!`-style: `info!("{} ok", event.id())`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Info, &::std::format!($($arg)+))
    };
}

/// Logs at warn level through the host, `format!`-style.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Warn, &::std::format!($($arg)+))
    };
}

/// Logs at error level through the host, `format!`-style.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => {
        $crate::log($crate::Level::Error, &::std::format!($($arg)+))
    };
}

/// Exports a handler as the component's `handle-events`.
///
/// The handler is either a function `fn(&[Event]) -> Result<Vec<Outcome>, E>` with any
/// `E: Display` ([`Error`] above all), or a unit struct implementing [`Handler`]:
///
/// ```
/// use beehive_guest::{Event, Outcome, Result};
///
/// fn handle(events: &[Event]) -> Result<Vec<Outcome>> {
///     Ok(Outcome::all_ack(events))
/// }
///
/// beehive_guest::export_handler!(handle);
/// ```
///
/// The export decodes the batch, installs the panic hook (see [`PANIC_PREFIX`]) and turns an
/// error into the batch's error string (its `Display`).
#[macro_export]
macro_rules! export_handler {
    ($handler:expr) => {
        struct __BeehiveHandler;
        impl $crate::bindings::exports::beehive::broker::handler::Guest for __BeehiveHandler {
            fn handle_events(
                events: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::Outcome>, ::std::string::String>
            {
                #[allow(unused_imports)]
                use $crate::__private::{ViaFunction as _, ViaHandler as _};
                (&&$crate::__private::Export($handler)).handle_events(events)
            }
        }
        $crate::bindings::export!(__BeehiveHandler with_types_in $crate::bindings);
    };
}
