//! The WebAssembly runtime: handler components run in sandboxed wasmtime stores.
//!
//! - [`WasmEngine`]: one wasmtime engine (epoch interruption driven by a ticker thread);
//!   loads components and checks they implement the `consumer` world. Compiled code is
//!   cached only in a folder private to the user (see
//!   [`with_cache_dir`](WasmEngine::with_cache_dir)).
//! - [`Component`]: a compiled component with its `InstancePre`, built once, identified by
//!   the SHA-256 digest of its bytes.
//! - [`WasmHandler`]: a [`BatchHandler`](crate::BatchHandler) that keeps one store and
//!   instance per running consumer, re-instantiated after a trap.
//! - [`encode_batch`]: the packed batch a component receives (one `list<u8>` per call).
//! - [`HostState`](host::HostState): what the guest may reach: publishing (allow-listed),
//!   logging, and a WASI context that grants nothing.

mod batch;
pub(crate) mod bindings;
mod component;
mod handler;
mod host;
mod output;

pub use batch::{WIT_VERSION, encode_batch};
pub use component::{Component, ComponentError, WasmEngine};
pub use handler::{GuestSettings, WasmHandler, check_instantiation};
