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
}

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
