//! The host side of a store: what a guest can reach.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::AsyncStdoutStream;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::beehive::broker::{logging, publisher, types};
use super::handler::GuestSettings;
use super::output::LogWriter;
use crate::event::NewEvent;

/// Per-store state: the WASI context (granting nothing), memory limits, the batch deadline
/// and the publishes buffered for the batch being handled.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) settings: Arc<GuestSettings>,
    pub(crate) label: Arc<str>,
    /// When the batch in progress must end (epoch interruption checks it).
    pub(crate) deadline: Instant,
    /// Publishes of the batch in progress, committed with its acknowledgements.
    pub(crate) publishes: Vec<NewEvent>,
    /// Publishes refused because the batch reached `max-publishes`.
    pub(crate) publish_overflow: bool,
    /// The first error line starting with [`PANIC_PREFIX`] the guest logged during the call
    /// in progress: the panic report of a guest about to trap.
    pub(crate) panic: Option<String>,
}

/// How a guest's panic report begins: the Rust SDK (`beehive_guest::PANIC_PREFIX`) logs
/// exactly one error line `panic: <message> (at <file>:<line>:<column>)` just before the
/// component traps, and a trap after such a line is reported as that panic.
pub(crate) const PANIC_PREFIX: &str = "panic: ";

/// The longest panic report kept as a batch error (the log line itself is capped at 8 KiB).
const MAX_PANIC_REPORT: usize = 2048;

impl HostState {
    pub(crate) fn new(settings: Arc<GuestSettings>, label: Arc<str>) -> Self {
        // No preopened directories, no environment, no arguments, no network, no inherited
        // stdio: the builder's defaults grant nothing. Output goes to the host log.
        let wasi = WasiCtx::builder()
            .stdout(AsyncStdoutStream::new(
                4096,
                LogWriter {
                    label: label.clone(),
                    stream: "stdout",
                },
            ))
            .stderr(AsyncStdoutStream::new(
                4096,
                LogWriter {
                    label: label.clone(),
                    stream: "stderr",
                },
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(settings.memory as usize)
            .trap_on_grow_failure(true)
            .instances(16)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limits,
            settings,
            label,
            deadline: Instant::now(),
            publishes: Vec::new(),
            publish_overflow: false,
            panic: None,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl publisher::Host for HostState {
    fn publish(
        &mut self,
        stream: String,
        body: Option<Vec<u8>>,
        meta: Vec<(String, String)>,
    ) -> Result<(), String> {
        let result = self.check_publish(stream, body, meta);
        if result.is_err()
            && let Some(metrics) = &self.settings.metrics
        {
            metrics.publish_refused(&self.settings.group);
        }
        result
    }
}

impl HostState {
    /// Checks a guest's publish against the allow-list and the batch limit, and buffers it.
    fn check_publish(
        &mut self,
        stream: String,
        body: Option<Vec<u8>>,
        meta: Vec<(String, String)>,
    ) -> Result<(), String> {
        if !self.settings.publish.contains(&stream) {
            tracing::warn!(consumer = %self.label, %stream, "refused publish: stream not in the group's publish allow-list");
            return Err(format!(
                "stream {stream} is not in this group's publish allow-list"
            ));
        }
        if self.publishes.len() >= self.settings.max_publishes {
            self.publish_overflow = true;
            return Err(format!(
                "this batch already published {} events, the group's max-publishes",
                self.settings.max_publishes
            ));
        }
        let event = NewEvent::new(&stream, body, meta).map_err(|e| e.to_string())?;
        self.publishes.push(event);
        Ok(())
    }
}

impl logging::Host for HostState {
    fn log(&mut self, level: logging::Level, message: String) {
        let message = if message.len() > 8192 {
            &message[..message.floor_char_boundary(8192)]
        } else {
            message.as_str()
        };
        if matches!(level, logging::Level::Error)
            && self.panic.is_none()
            && message.starts_with(PANIC_PREFIX)
        {
            let end = message.floor_char_boundary(MAX_PANIC_REPORT);
            self.panic = Some(message[..end].to_string());
        }
        let label = &self.label;
        match level {
            logging::Level::Trace => {
                tracing::trace!(target: "beehive::guest", consumer = %label, "{message}")
            }
            logging::Level::Debug => {
                tracing::debug!(target: "beehive::guest", consumer = %label, "{message}")
            }
            logging::Level::Info => {
                tracing::info!(target: "beehive::guest", consumer = %label, "{message}")
            }
            logging::Level::Warn => {
                tracing::warn!(target: "beehive::guest", consumer = %label, "{message}")
            }
            logging::Level::Error => {
                tracing::error!(target: "beehive::guest", consumer = %label, "{message}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The host recognises exactly the prefix the Rust SDK writes.
    #[test]
    fn the_panic_prefix_is_the_rust_sdks() {
        let sdk = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/src/export.rs"),
        )
        .expect("the Rust SDK's source");
        let expected = format!("pub const PANIC_PREFIX: &str = {:?};", super::PANIC_PREFIX);
        assert!(
            sdk.contains(&expected),
            "guest-sdk/src/export.rs lacks {expected}"
        );
    }
}
