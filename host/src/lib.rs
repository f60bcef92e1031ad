//! # Beehive
//!
//! An event broker on Redis Streams with consumer groups, whose consumers can be sandboxed
//! WebAssembly components. This crate is the host: the registry of pools, streams and
//! groups, publishing, consumers with single-runner locks, claiming, garbage collection,
//! statistics, and the `beehive` command line.
//!
//! The layers, dependencies pointing down only (a test keeps it so):
//!
//! | layer | modules | holds |
//! |---|---|---|
//! | command line | [`cli`] | argument parsing, output, exit codes |
//! | operations | [`ops`] | supervisor, hot reload, fleet deploy, metrics |
//! | handlers | [`runtime`] | WASM components as batch handlers |
//! | consumers | [`consumer`] | reading, deciding, committing batches |
//! | broker | [`broker`] | publish, flusher, statistics, GC, redrive |
//! | engine | [`engine`] | connections per pool |
//! | Redis | `redis` (internal) | every Redis command, the commit script, locks |
//! | topology | [`config`], [`registry`] | file → validated pools, streams, groups |
//! | floor | [`error`], [`keys`], [`event`], [`address`] | types every layer shares |
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

// The floor: depends on nothing above it.
pub mod address;
pub mod error;
pub mod event;
pub mod keys;

// The topology: file → validated registry.
pub mod config;
pub mod registry;

// The one layer that sends Redis commands.
pub(crate) mod redis;

// Connections per pool.
pub mod engine;

// What users call: publishing, statistics, GC, redrive; consumers; WASM handlers.
pub mod broker;
pub mod consumer;
pub mod runtime;

// Running a fleet: supervisor, hot reload, deploy, metrics.
pub mod ops;

// The command line.
pub mod cli;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod layers_test;

pub use crate::redis::pool::Connection;
pub use broker::EventBroker;
pub use broker::flusher::Flusher;
pub use broker::gc::GcReport;
pub use broker::stats::StreamStatistics;
pub use config::{Config, ConfigError};
pub use consumer::{BatchHandler, Consumer, ConsumerOptions, Decision, Outcome};
pub use engine::Engine;
pub use error::{Error, Result};
pub use event::{EntryId, Event, NewEvent};
pub use ops::redis_cluster;
pub use ops::redis_server;
pub use registry::{Registry, ValidatedRegistry};
pub use tokio_util::sync::CancellationToken;
