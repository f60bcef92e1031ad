//! # Beehive
//!
//! An event broker on Redis Streams with consumer groups, whose consumers can be sandboxed
//! WebAssembly components. This crate is the host: the registry of pools, streams and
//! groups, publishing, consumers with single-runner locks, claiming, garbage collection,
//! statistics, and the `beehive` command line.
//!
//! The layers, each in its own module: [`config`] → [`registry`] → [`engine`] →
//! [`broker`] / [`consumer`] (with [`commit`]) → [`gc`] and [`stats`]; every Redis command is
//! built in one internal layer.
//!
//! ```no_run
//! use beehive::Registry;
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let mut registry = Registry::new();
//! registry.register_redis("localhost:6379", "", 0, "default");
//! registry.register_redis_stream("stream-a", "default", &["read-group-a"]);
//! let engine = registry.validate().await?.create_engine();
//! let broker = engine.event_broker();
//! let id = broker.publish("stream-a", "hello", &[("version", "1")]).await?;
//! let mut consumer = broker.consumer("read-group-a")?;
//! consumer.disable_loop();
//! consumer
//!     .consume(CancellationToken::new(), 100, |events| async move {
//!         for event in &events {
//!             let body: String = event.unserialize()?;
//!             println!("{} {} {body}", event.id(), event.tag("version"));
//!         }
//!         Ok(())
//!     })
//!     .await?;
//! # let _ = id; Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod broker;
pub mod cli;
pub(crate) mod commands;
pub mod commit;
pub mod config;
pub mod consumer;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod event;
pub mod flusher;
pub mod gc;
pub(crate) mod lock;
pub mod metrics;
pub(crate) mod page_reader;
pub mod redis_server;
pub mod redrive;
pub mod registry;
pub mod reload;
pub mod runtime;
pub mod stats;
pub mod supervisor;

#[cfg(test)]
mod fuzz_tests;

pub use broker::EventBroker;
pub use config::{Config, ConfigError};
pub use consumer::{BatchHandler, Consumer, ConsumerOptions, Decision, Outcome};
pub use engine::Engine;
pub use error::{Error, Result};
pub use event::{EntryId, Event, NewEvent};
pub use flusher::Flusher;
pub use registry::{Registry, ValidatedRegistry};
pub use tokio_util::sync::CancellationToken;
