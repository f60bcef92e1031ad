//! # beehive-guest
//!
//! Write Beehive event handlers in Rust. Build with `cargo build --target wasm32-wasip2`:
//! the output is already a WebAssembly component implementing the `beehive:broker/consumer`
//! world.
//!
//! ```no_run
//! use beehive_guest::{Event, EventExt, Handler, Outcome, info, publish};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn handle(events: &[Event]) -> Result<Vec<Outcome>, String> {
//!         for event in events {
//!             info(&format!("{} {} version={}", event.stream(), event.id(), event.tag("version")));
//!             if event.stream() == "orders" {
//!                 let total: f64 = event.unserialize().map_err(|e| e.to_string())?;
//!                 publish("receipts", &total, &[("order", event.id())])?;
//!             }
//!         }
//!         Ok(Outcome::all_ack(events))
//!     }
//! }
//!
//! beehive_guest::export_handler!(Echo);
//! ```

#![warn(missing_docs)]

use serde::Serialize;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "consumer",
        pub_export_macro: true,
        default_bindings_module: "beehive_guest::bindings",
    });
}

mod event;

use bindings::beehive::broker::{logging, publisher, types};

pub use event::{Batch, DecodeError, Event, EventExt};

/// The host's outcome type.
pub use types::Outcome;

impl Outcome {
    /// `Ack` for every event.
    pub fn all_ack(events: &[Event]) -> Vec<Outcome> {
        vec![Outcome::Ack; events.len()]
    }
}

/// A handler: decides per event. Return `Ok(Outcome::all_ack(events))` when all is well;
/// `Err` fails (and retries) the whole batch.
pub trait Handler {
    /// Handles one batch.
    fn handle(events: &[Event]) -> Result<Vec<Outcome>, String>;
}

/// Publishes `body` (MessagePack, structs as maps) with `meta` to `stream`, committed with
/// the batch's acknowledgement. Fails when the stream is not in the group's allow-list.
pub fn publish<T: Serialize + ?Sized, K: AsRef<str>, V: AsRef<str>>(
    stream: &str,
    body: &T,
    meta: &[(K, V)],
) -> Result<(), String> {
    let body = rmp_serde::to_vec_named(body).map_err(|e| e.to_string())?;
    publisher::publish(stream, Some(&body), &owned(meta))
}

/// Publishes an already encoded MessagePack body (`None` for metadata only).
pub fn publish_raw<K: AsRef<str>, V: AsRef<str>>(
    stream: &str,
    body: Option<&[u8]>,
    meta: &[(K, V)],
) -> Result<(), String> {
    publisher::publish(stream, body, &owned(meta))
}

/// Publishes a metadata-only event.
pub fn publish_meta<K: AsRef<str>, V: AsRef<str>>(
    stream: &str,
    meta: &[(K, V)],
) -> Result<(), String> {
    publisher::publish(stream, None, &owned(meta))
}

fn owned<K: AsRef<str>, V: AsRef<str>>(meta: &[(K, V)]) -> Vec<(String, String)> {
    meta.iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect()
}

/// Logs at debug level through the host.
pub fn debug(message: &str) {
    logging::log(logging::Level::Debug, message)
}

/// Logs at info level through the host.
pub fn info(message: &str) {
    logging::log(logging::Level::Info, message)
}

/// Logs at warn level through the host.
pub fn warn(message: &str) {
    logging::log(logging::Level::Warn, message)
}

/// Logs at error level through the host.
pub fn error(message: &str) {
    logging::log(logging::Level::Error, message)
}

#[doc(hidden)]
pub fn __handle<H: Handler>(batch: Vec<u8>) -> Result<Vec<Outcome>, String> {
    let batch = Batch::decode(&batch)?;
    H::handle(&batch.events())
}

/// Exports a [`Handler`] as the component's `handle-events`.
#[macro_export]
macro_rules! export_handler {
    ($handler:ty) => {
        struct __BeehiveHandler;
        impl $crate::bindings::exports::beehive::broker::handler::Guest for __BeehiveHandler {
            fn handle_events(
                events: ::std::vec::Vec<u8>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::Outcome>, ::std::string::String> {
                $crate::__handle::<$handler>(events)
            }
        }
        $crate::bindings::export!(__BeehiveHandler with_types_in $crate::bindings);
    };
}
