//! The WebAssembly runtime: handler components run in sandboxed wasmtime stores.
//!
//! - [`WasmEngine`]: one wasmtime engine (epoch interruption driven by a ticker thread);
//!   loads components and checks they implement the `consumer` world.
//! - [`Component`]: a compiled component with its `InstancePre`, built once, identified by
//!   the SHA-256 digest of its bytes.
//! - [`WasmHandler`]: a [`BatchHandler`](crate::BatchHandler) that keeps one store and
//!   instance per running consumer, re-instantiated after a trap.
//! - [`HostState`](host::HostState): what the guest may reach: publishing (allow-listed),
//!   logging, and a WASI context that grants nothing.

pub(crate) mod bindings;
mod component;
mod handler;
mod host;
mod output;

pub use component::{Component, ComponentError, WasmEngine};
pub use handler::{GuestSettings, WasmHandler, check_instantiation};
