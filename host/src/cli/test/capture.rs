//! What a guest logs and which publishes the host refuses, captured per call.
//!
//! The runtime sends a guest's `logging.log` lines and its stdout/stderr to the host log
//! (`tracing`, target `beehive::guest`), and warns when it refuses a publish (with a
//! `stream` field) besides telling the guest; refusals are also counted through the
//! metrics [`Observer`]. `beehive test` runs its calls on a thread of its own whose tracing
//! dispatcher is a [`Capture`] layer, so these land in the result of the call that made
//! them instead of on stderr.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::consumer::{BatchCounts, Observer};

/// The target of guest output in the host log.
const GUEST_TARGET: &str = "beehive::guest";

/// Log lines and refusals seen since the last [`Capture::take`].
#[derive(Debug, Default)]
pub(super) struct Captured {
    /// `<level>: <message>`, or `stdout: <text>` / `stderr: <text>`.
    pub(super) logs: Vec<String>,
    /// The streams of refused publishes the host named.
    pub(super) refused_streams: Vec<String>,
}

/// A tracing layer keeping guest log lines and refused-publish warnings.
#[derive(Clone, Default)]
pub(super) struct Capture(Arc<Mutex<Captured>>);

impl Capture {
    /// Everything captured since the last call.
    pub(super) fn take(&self) -> Captured {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Whether the host log line described by `metadata` is captured (and so not printed).
    pub(super) fn captures(metadata: &tracing::Metadata<'_>) -> bool {
        metadata.target() == GUEST_TARGET || is_refusal_target(metadata)
    }
}

/// Warnings of the runtime's host functions: refused publishes.
fn is_refusal_target(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target().starts_with("beehive::runtime::host") && *metadata.level() == Level::WARN
}

#[derive(Default)]
struct Fields {
    message: String,
    stream: Option<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message.push_str(value),
            "stream" => self.stream = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => {
                let _ = write!(self.message, "{value:?}");
            }
            "stream" => self.stream = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let metadata = event.metadata();
        if !Self::captures(metadata) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if metadata.target() == GUEST_TARGET {
            let line = match fields.stream {
                // Guest stdout/stderr.
                Some(stream) => format!("{stream}: {}", fields.message),
                None => format!(
                    "{}: {}",
                    metadata.level().as_str().to_ascii_lowercase(),
                    fields.message
                ),
            };
            captured.logs.push(line);
        } else if let Some(stream) = fields.stream {
            captured.refused_streams.push(stream);
        }
    }
}

/// Counts refused publishes (the one metric `beehive test` needs).
#[derive(Debug, Default)]
pub(super) struct Refusals(AtomicU64);

impl Refusals {
    /// Refusals since the last call.
    pub(super) fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

impl Observer for Refusals {
    fn batch(&self, _: &str, _: BatchCounts, _: Duration, _: Option<u64>) {}
    fn failure(&self, _: &str, _: &str) {}
    fn published(&self, _: &str, _: &str, _: u64) {}
    fn publish_refused(&self, _: &str) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn commit_failed(&self, _: &str) {}
    fn relayed(&self, _: &str, _: &str, _: u64) {}
    fn deleted_while_pending(&self, _: &str, _: u64) {}
    fn lock_held(&self, _: &str, _: i64) {}
}

/// The refused publishes of one call: each stream the host named, then a placeholder for
/// each refusal it did not name (an invalid event, or past `max-publishes`).
pub(super) fn refused(named: Vec<String>, count: u64) -> Vec<String> {
    let mut refused = named;
    refused.truncate(count as usize);
    while (refused.len() as u64) < count {
        refused.push("(an invalid event, or past --max-publishes)".into());
    }
    refused
}
